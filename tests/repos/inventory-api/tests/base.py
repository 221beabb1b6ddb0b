import unittest

from inventory import db


class DatabaseTest(unittest.TestCase):
    """Each test gets the schema, empty, in the PostgreSQL that DATABASE_URL names."""

    def setUp(self):
        self.connection = db.connect()
        with self.connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS stock, items")
        db.create_schema(self.connection)
        self.addCleanup(self.connection.close)
