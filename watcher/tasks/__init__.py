"""Where tasks come from: validation of one registration, and the tasks file importer."""
