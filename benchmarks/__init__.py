"""Back-ends of ``fedrt bench``: each module measures one target and prints a table."""
