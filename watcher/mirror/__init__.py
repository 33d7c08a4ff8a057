"""Result mirroring: copies of succeeded tasks' result files, kept before their URLs expire."""
