"""Where the server runs: a new Oracle Cloud VM, or a server the user already has. Its fields are
the keys the providers declare for this step; only their wording for this machine is here."""

from __future__ import annotations

from typing import Any

from screens.form import FormScreen

UPGRADE_CHOICE = "the server an earlier run made"


class CloudScreen(FormScreen):
    """Provider, then what that provider needs (its declarations say which keys apply)."""

    STEP = "Cloud"
    HEADING = "Where will the server run?"

    def heading(self) -> str:
        return "Where does the server run?" if self.installer.options.mode == "upgrade" else self.HEADING

    def field_options(self, path: str) -> dict[str, Any]:
        if path == "cloud.provider" and self.installer.options.mode == "upgrade":
            spec = self._spec(path)
            return {"options": [(value, f"{words.split(':')[0]}: {UPGRADE_CHOICE}" if value == "oci" else words)
                                for value, words in spec.declared.options],
                    "option_guides": [("oci", "its address and host key come from the state of the run that made it"),
                                      ("existing", "give its address and pin its host key below")]}
        if path == "cloud.oci_profile":
            profiles = self.installer.found.oci_profiles if self.installer.found else ()
            names = ", ".join(p.name for p in profiles) or "none"
            return {"help": f"profile (section) in that file; found: {names}"}
        return {}

    @staticmethod
    def _spec(path: str) -> Any:
        from installer.answers import FIELDS_BY_PATH

        return FIELDS_BY_PATH[path]
