"""Support code for the tests, not tests: a crash-proof child process, the browser driver and
the lessons' memory-budget plugin (loaded by the root ``conftest.py``)."""
