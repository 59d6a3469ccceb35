"""The anchor for the first-frame figure: the smallest Textual app that shows something."""

from textual.app import App, ComposeResult
from textual.widgets import Static


class HelloApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("Hello")


if __name__ == "__main__":
    HelloApp().run()
