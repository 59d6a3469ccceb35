from screens.main import entry

entry()
