"""The Streamlit app: `streamlit run dashboard/app/main.py`; screens call the clinical core."""
