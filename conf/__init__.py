"""rtb's Hydra configs, installed as a package so they are found from any directory."""
