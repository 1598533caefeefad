"""nspec."""
