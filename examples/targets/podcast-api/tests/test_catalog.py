import unittest

from podcast_api.catalog import Catalog


class CatalogTests(unittest.TestCase):
    def setUp(self):
        self.catalog = Catalog.from_seed()

    def test_shows_are_sorted_by_title(self):
        titles = [show["title"] for show in self.catalog.shows()]
        self.assertEqual(titles, ["Field Notes", "Small Plates", "The Daily Commit"])

    def test_a_show_is_found_by_id(self):
        show = self.catalog.show("small-plates")
        self.assertEqual(show["host"], "June Park")
        self.assertEqual(show["language"], "en")

    def test_an_unknown_show_is_none(self):
        self.assertIsNone(self.catalog.show("no-such-show"))

    def test_episodes_are_newest_first(self):
        published = [episode["published"] for episode in self.catalog.episodes()]
        self.assertEqual(len(published), 9)
        self.assertEqual(published, sorted(published, reverse=True))

    def test_episodes_can_be_limited_to_one_show(self):
        episodes = self.catalog.episodes(show_id="field-notes")
        self.assertEqual([episode["id"] for episode in episodes], [7, 6, 5])

    def test_an_unknown_show_has_no_episodes(self):
        self.assertEqual(self.catalog.episodes(show_id="no-such-show"), [])

    def test_an_episode_is_found_by_id(self):
        episode = self.catalog.episode(8)
        self.assertEqual(episode["title"], "Perfect Rice, Every Time")
        self.assertEqual(episode["duration_seconds"], 1190)
        self.assertIsNone(self.catalog.episode(999))

    def test_a_catalog_can_start_from_other_data(self):
        shows = [
            {"id": "solo", "title": "Solo", "host": "Ann", "description": "-", "language": "fr"}
        ]
        catalog = Catalog.from_seed(shows=shows, episodes=[])
        self.assertEqual([show["id"] for show in catalog.shows()], ["solo"])
        self.assertEqual(catalog.episodes(), [])


if __name__ == "__main__":
    unittest.main()
