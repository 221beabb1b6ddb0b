import assert from "node:assert/strict";
import { ORDERS, dayTotal, formatCents, orderTotal } from "../src/orders.js";

export function totalsMultiplyQuantity() {
  assert.equal(orderTotal(ORDERS[0]), 4900);
}

export function dayTotalAddsEveryOrder() {
  assert.equal(dayTotal(ORDERS), 4900 + 5900 + 2600 + 2400);
}

export function amountsAreFormattedInDollars() {
  assert.equal(formatCents(158000), "$1,580.00");
}
