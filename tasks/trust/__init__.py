"""Trust: signed statements (DSSE), envelope encryption and its keys, the safe model
loader, and the layout and verification of a release."""
