"""Helpers of the built-in datasets: 2-D toy sets, images and image folders, array files (not plugins themselves)."""
