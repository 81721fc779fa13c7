"""The clinician web app (issue #12): server-rendered pages over the API's own checks."""
