"""Run a project script with the CPU split into N logical devices, to test mirrored training without GPUs.

    python tests/logical_cpus.py N train.py --strategy mirrored ...
"""
import runpy
import sys

import tensorflow as tf

count, script, *args = sys.argv[1:]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
