"""Where session state lives: the SessionStore interface and its implementations."""
