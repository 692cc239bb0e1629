"""Physical constants and unit helpers shared by the package (OpenMM's MD units: nm, ps, amu, kJ/mol, K)."""

BOLTZMANN_KJ = 0.00831446261815324  # kJ/mol/K (molar gas constant, CODATA 2018)
BOLTZMANN_KCAL = 0.0019872043       # kcal/mol/K


def valueIn(quantity, unit, name: str = "the value"):
    """``quantity`` as a float in ``unit`` when it is an OpenMM Quantity, else the number as given (already in
    ``unit``). A Quantity whose unit cannot be converted to ``unit`` raises a TypeError naming ``name``."""
    if not hasattr(quantity, "value_in_unit"):
        return float(quantity)
    if not quantity.unit.is_compatible(unit):
        raise TypeError(f"{name} must be in {unit} or a unit convertible to it (or a plain number in {unit}); got "
                        f"{quantity}")
    return quantity.value_in_unit(unit)
