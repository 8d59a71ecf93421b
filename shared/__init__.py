"""Core package of the SAE notebook ladder: every notebook imports its modules from here.

Kept empty on purpose: each notebook vendors only the modules it imports, so this file must
not import siblings eagerly.
"""
__version__ = "0.1.0"
