"""The connection to PostgreSQL, from DATABASE_URL."""

import os

import psycopg2

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    unit TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT NOT NULL REFERENCES items (sku),
    warehouse TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (sku, warehouse)
);
"""


def connect():
    connection = psycopg2.connect(os.environ["DATABASE_URL"])
    connection.autocommit = True
    return connection


def create_schema(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute(SCHEMA)
