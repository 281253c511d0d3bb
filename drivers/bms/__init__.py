"""BMS drivers over serial: the vendor-neutral reading (``model``), shared codec errors
(``errors``) and one package per protocol (``jbd``, ``daly``) holding a pure codec."""
