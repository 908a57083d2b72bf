"""Labelled datasets on disk: reading nnU-Net-style folders, label tables and modality hints.

Both training and evaluation read datasets through this layer (it sits below both and imports
neither): :mod:`.dataset` finds the cases of a dataset folder, :mod:`.labels` turns a label table
into prompts, :mod:`.checks` compares headers and label values (the modality text of dataset.json goes through
:mod:`TGatedSegmentLib.modality`). Importing it needs neither torch nor SimpleITK.
"""
