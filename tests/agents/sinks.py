"""The engine's sink for tests: keeps every event it is sent, never cancels."""


class Sink:
    def __init__(self):
        self.events = []

    def emit(self, kind, data):
        self.events.append((kind, data))

    def stage(self, name):
        pass

    def cancelled(self):
        return False
