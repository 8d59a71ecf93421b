"""What a notebook shows: every matplotlib figure (`plots`), the HTML views of its outputs (`html`) and the
viewers' one script and stylesheet with the site's address (`viewer`). Named views, not html under
features, because circuits, scores and lenses use them too. Imports nothing, so a notebook vendors only the
modules it uses."""
