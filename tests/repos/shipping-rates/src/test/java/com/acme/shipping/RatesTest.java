package com.acme.shipping;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class RatesTest {
    @Test void aLightParcelPaysOneKilogram() { assertEquals(570, Rates.cents(200)); }
    @Test void everyStartedKilogramCounts() { assertEquals(690, Rates.cents(1001)); }
}
