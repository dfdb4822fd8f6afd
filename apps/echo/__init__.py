"""apps.echo: LV segmentation of echocardiograms by dual-noise (Gaussian + Bernoulli) diffusion, with
ensembles, uncertainty and ejection fraction. Guide: ``docs/echo.md``."""
