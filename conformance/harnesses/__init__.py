"""One harness module per subject family; registered by name in conformance/subjects.py."""
