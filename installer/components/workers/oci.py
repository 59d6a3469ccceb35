"""Worker hosts on Oracle Cloud: placeholder, filled in below."""
