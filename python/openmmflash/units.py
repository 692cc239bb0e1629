"""Physical constants and unit helpers shared by the package (OpenMM's MD units: nm, ps, amu, kJ/mol, K)."""

BOLTZMANN_KJ = 0.00831446261815324  # kJ/mol/K (molar gas constant, CODATA 2018)
BOLTZMANN_KCAL = 0.0019872043       # kcal/mol/K


def valueIn(quantity, unit):
    """``quantity`` as a float in ``unit`` when it is an OpenMM Quantity, else the number as given (already in
    ``unit``)."""
    return quantity.value_in_unit(unit) if hasattr(quantity, "value_in_unit") else float(quantity)
