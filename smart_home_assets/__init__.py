"""The smart-home-assets code location (``definitions.py``) and its pure data logic."""

from smart_home_assets.accepted_warnings import silence_accepted_warnings

silence_accepted_warnings()
