"""Modbus: pure codec and register maps; the pymodbus-based driver."""
