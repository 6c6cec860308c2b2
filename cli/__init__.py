"""The ``embedkit`` command line (click), installed as the ``embedkit`` console command."""
