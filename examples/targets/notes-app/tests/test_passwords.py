import unittest

from notes_app.passwords import check_password, hash_password


class PasswordTests(unittest.TestCase):
    def test_the_hash_checks_the_right_password_only(self):
        stored = hash_password("correct horse")
        self.assertTrue(check_password("correct horse", stored))
        self.assertFalse(check_password("correct horsf", stored))
        self.assertFalse(check_password("", stored))

    def test_the_hash_does_not_hold_the_password_and_is_salted(self):
        first, second = hash_password("correct horse"), hash_password("correct horse")
        self.assertNotIn("correct horse", first)
        self.assertTrue(first.startswith("scrypt$"))
        self.assertNotEqual(first, second)

    def test_a_malformed_hash_never_matches(self):
        for stored in ["", "plain", "scrypt$1$2$3$zz$zz", "md5$16384$8$1$00$00"]:
            self.assertFalse(check_password("anything", stored), stored)


if __name__ == "__main__":
    unittest.main()
