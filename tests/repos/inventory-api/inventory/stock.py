"""Stock: receiving goods, shipping them, and what is on hand."""

from acme_units import convert


def add_item(connection, sku: str, name: str, unit: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO items (sku, name, unit) VALUES (%s, %s, %s)", (sku, name, unit))


def receive(connection, sku: str, warehouse: str, quantity: int, unit: str | None = None) -> None:
    """Add `quantity` (in `unit`, or the item's own unit) to the warehouse's stock."""
    quantity = _in_item_unit(connection, sku, quantity, unit)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO stock (sku, warehouse, quantity) VALUES (%s, %s, %s) "
            "ON CONFLICT (sku, warehouse) DO UPDATE SET quantity = stock.quantity + EXCLUDED.quantity",
            (sku, warehouse, quantity),
        )


def ship(connection, sku: str, warehouse: str, quantity: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE stock SET quantity = quantity - %s WHERE sku = %s AND warehouse = %s AND quantity >= %s",
            (quantity, sku, warehouse, quantity),
        )
        if cursor.rowcount != 1:
            raise ValueError(f"not enough {sku} in {warehouse}")


def on_hand(connection, sku: str) -> dict[str, int]:
    """Quantity per warehouse, for warehouses that have any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT warehouse, quantity FROM stock WHERE sku = %s AND quantity > 0 ORDER BY warehouse", (sku,)
        )
        return dict(cursor.fetchall())


def _in_item_unit(connection, sku: str, quantity: int, unit: str | None) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT unit FROM items WHERE sku = %s", (sku,))
        (item_unit,) = cursor.fetchone()
    return quantity if unit in (None, item_unit) else convert(quantity, unit, item_unit)
