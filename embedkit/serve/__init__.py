"""`embedkit serve`: a search service over a code store (:mod:`.service`), its HTTP routes (:mod:`.app`) and the
browser page they serve (``page.html``). The service needs no web framework; the app needs the ``serve`` extra."""
