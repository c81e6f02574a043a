"""One runner per runtime (run(dict) -> dict) and the backend registry that opens them."""
