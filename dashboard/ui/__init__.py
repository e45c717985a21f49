"""Streamlit-side helpers shared by the pages: cached data access and common widgets. No clinical rules."""
