"""Models and their storage: architecture discovery, loading, block-by-block forward and
input statistics, variants stored as changes to their parent, atomic writes."""
