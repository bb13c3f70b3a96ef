"""Pure data logic: the upload contract, parsing, cleaning, features, training, scoring. No Dagster import here:
``resources/``, the assets and the checks build on it; nothing in it imports them back."""
