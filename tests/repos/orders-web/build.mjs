// Renders today's orders into dist/index.html (a static page: the store serves it as the preview).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { ORDERS, dayTotal, formatCents, orderTotal } from "./src/orders.js";

const escape = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const rows = ORDERS.map(
  (order) => `<tr><td>${escape(order.id)}</td><td>${escape(order.customer)}</td>` +
    `<td class="amount">${escape(formatCents(orderTotal(order)))}</td></tr>`,
).join("\n      ");
const page = readFileSync("src/index.html", "utf8")
  .replace("<!-- rows -->", rows)
  .replace("<!-- day total -->", escape(formatCents(dayTotal(ORDERS))));
mkdirSync("dist", { recursive: true });
writeFileSync("dist/index.html", page);
console.log(`dist/index.html: ${ORDERS.length} orders`);
