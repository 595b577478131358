"""The regime model: a Gaussian HMM over z_t (plan phase 4 and task 5.4)."""
