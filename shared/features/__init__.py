"""An SAE's features: their statistics and ranking over a token stream (`stats`), labels by an LLM judge
(`judge`), a prompt traced through them (`trace`) and a watch-list monitor (`watch`). Imports nothing, so
a notebook vendors only the modules it uses."""
