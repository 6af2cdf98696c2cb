"""The platform's foundations: where files live, the config, the database, frozen files."""
