"""Readers of users' 4D-STEM files (lazy, in chunks of scan positions) and writers of Bragg vectors."""
