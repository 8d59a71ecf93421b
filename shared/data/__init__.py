"""Text and labelled data: sources (`sources`), their training / held-out split (`splits`), weighted
mixing (`mixing`), packing into model contexts (`packing`), labelled tasks (`tasks`), and the offline
`synthetic` corpus with its prompt `templates`. Imports nothing, so a notebook vendors only the
modules it uses."""
