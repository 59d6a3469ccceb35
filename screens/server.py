"""What the server runs besides its names and accounts: the components' own choices (the database,
the Synapse image, upgrades). Every field here comes from a component's declaration."""

from __future__ import annotations

from screens.form import FormScreen


class ServerScreen(FormScreen):
    STEP = "Server"
    HEADING = "What will the server run?"

    def heading(self) -> str:
        return "What does the server run?" if self.installer.options.mode == "upgrade" else self.HEADING
