"""Corpus → audio → features → splits → LightningDataModule."""
