import tempfile
import unittest

from notes_app import seed
from notes_app.database import Database, Invalid


class AccountTests(unittest.TestCase):
    def setUp(self):
        self.db = Database.in_memory()

    def test_sign_up_then_sign_in(self):
        user = self.db.create_user("Ana", "long enough")
        self.assertEqual(user["username"], "ana")  # usernames are not case-sensitive
        self.assertEqual(self.db.authenticate("ANA", "long enough"), user)
        self.assertIsNone(self.db.authenticate("ana", "wrong password"))
        self.assertIsNone(self.db.authenticate("nobody", "long enough"))

    def test_a_taken_username_is_refused(self):
        self.db.create_user("ana", "long enough")
        with self.assertRaisesRegex(Invalid, "taken"):
            self.db.create_user("ANA", "another password")

    def test_bad_usernames_and_short_passwords_are_refused(self):
        for username in ["", "ab", "has space", "<script>", "x" * 31]:
            with self.assertRaisesRegex(Invalid, "username", msg=username):
                self.db.create_user(username, "long enough")
        with self.assertRaisesRegex(Invalid, "at least 8"):
            self.db.create_user("ana", "short")

    def test_sessions_name_their_user_until_ended(self):
        user = self.db.create_user("ana", "long enough")
        token = self.db.start_session(user["id"])
        self.assertEqual(self.db.session_user(token), user)
        self.assertIsNone(self.db.session_user("made-up"))
        self.assertIsNone(self.db.session_user(""))
        self.db.end_session(token)
        self.assertIsNone(self.db.session_user(token))


class NoteTests(unittest.TestCase):
    def setUp(self):
        self.db = Database.in_memory()
        self.ana = self.db.create_user("ana", "long enough")["id"]
        self.ben = self.db.create_user("ben", "long enough")["id"]

    def test_notes_are_listed_newest_first(self):
        self.db.add_note(self.ana, "older", created="2026-01-01T10:00:00Z")
        self.db.add_note(self.ana, "  newer  ", created="2026-01-02T10:00:00Z")
        self.assertEqual([n["text"] for n in self.db.notes(self.ana)], ["newer", "older"])

    def test_each_person_sees_and_deletes_only_their_own_notes(self):
        note = self.db.add_note(self.ana, "Ana's secret plan")
        self.assertEqual(self.db.notes(self.ben), [])
        self.assertIsNone(self.db.note(self.ben, note["id"]))
        self.assertFalse(self.db.delete_note(self.ben, note["id"]))
        self.assertEqual(self.db.note(self.ana, note["id"])["text"], "Ana's secret plan")
        self.assertTrue(self.db.delete_note(self.ana, note["id"]))
        self.assertEqual(self.db.notes(self.ana), [])

    def test_empty_and_overlong_notes_are_refused(self):
        with self.assertRaisesRegex(Invalid, "Write something"):
            self.db.add_note(self.ana, "   ")
        with self.assertRaisesRegex(Invalid, "2000"):
            self.db.add_note(self.ana, "x" * 2001)


class FileTests(unittest.TestCase):
    def test_data_stays_in_the_data_folder_across_restarts(self):
        with tempfile.TemporaryDirectory() as folder:
            db = Database.open(f"{folder}/data")
            user = db.create_user("ana", "long enough")
            db.add_note(user["id"], "kept")
            db.close()
            again = Database.open(f"{folder}/data")  # migrations run again and change nothing
            self.assertEqual([n["text"] for n in again.notes(user["id"])], ["kept"])
            again.close()

    def test_the_seed_adds_the_demo_account_once(self):
        db = Database.in_memory()
        self.assertTrue(seed.fill(db))
        self.assertFalse(seed.fill(db))
        demo = db.authenticate(seed.DEMO_USERNAME, seed.DEMO_PASSWORD)
        self.assertEqual(len(db.notes(demo["id"])), len(seed.DEMO_NOTES))


if __name__ == "__main__":
    unittest.main()
