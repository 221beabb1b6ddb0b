import money from "@acme/money";

// Today's orders at the desk. Sample data: the app reads them from its backend in production.
export const ORDERS = [
  { id: "A-1001", customer: "Ines Duarte", items: [{ name: "Espresso beans 1 kg", cents: 2450, qty: 2 }] },
  { id: "A-1002", customer: "Tomás Weber", items: [{ name: "Pour-over kettle", cents: 5900, qty: 1 }] },
  { id: "A-1003", customer: "Mei Tanaka", items: [{ name: "Paper filters", cents: 650, qty: 4 }, { name: "Mug", cents: 1200, qty: 2 }] },
];

export function orderTotal(order) {
  return money.sum(order.items.map((item) => item.cents * item.qty));
}

export function dayTotal(orders) {
  return money.sum(orders.map(orderTotal));
}

export function formatCents(cents) {
  return money.format(cents);
}
