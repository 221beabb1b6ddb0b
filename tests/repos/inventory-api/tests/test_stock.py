from inventory import stock

from tests.base import DatabaseTest


class StockTest(DatabaseTest):
    def setUp(self):
        super().setUp()
        stock.add_item(self.connection, "BEAN-1KG", "Espresso beans", "g")

    def test_received_goods_are_on_hand(self):
        stock.receive(self.connection, "BEAN-1KG", "lisbon", 4000)
        self.assertEqual(stock.on_hand(self.connection, "BEAN-1KG"), {"lisbon": 4000})

    def test_receiving_in_another_unit_converts(self):
        stock.receive(self.connection, "BEAN-1KG", "berlin", 3, unit="kg")
        self.assertEqual(stock.on_hand(self.connection, "BEAN-1KG"), {"berlin": 3000})

    def test_shipping_more_than_is_there_is_refused(self):
        stock.receive(self.connection, "BEAN-1KG", "lisbon", 500)
        with self.assertRaises(ValueError):
            stock.ship(self.connection, "BEAN-1KG", "lisbon", 501)
        self.assertEqual(stock.on_hand(self.connection, "BEAN-1KG"), {"lisbon": 500})

    def test_the_database_is_postgresql(self):
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            self.assertIn("PostgreSQL", cursor.fetchone()[0])
