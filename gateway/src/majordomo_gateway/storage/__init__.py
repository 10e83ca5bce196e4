"""Where rows and keys live: SQLite (the embedded default) or PostgreSQL, behind one interface."""
