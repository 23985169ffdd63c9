"""Knowledge transfer with neural structured learning (NSL): a teacher's similarity graph
regularises a student (Chang, Ren, Nguyen, Qian and Schuller, 2022)."""
