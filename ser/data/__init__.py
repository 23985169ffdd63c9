"""Corpus → features (decoded and filtered with ``ser.dsp``) → splits → LightningDataModule."""
