package com.acme.shipping;

public final class Rates {
    private Rates() {}

    /** Shipping in cents for a parcel of `grams`: a base fee plus a fee per started kilogram. */
    public static int cents(int grams) {
        if (grams <= 0) throw new IllegalArgumentException("a parcel weighs something");
        return 450 + 120 * ((grams + 999) / 1000);
    }
}
