"""Modbus: pure codec and register maps; our Modbus/TCP client, pymodbus for RTU; the driver."""
