"""Writes the benchmark's 1,000 sales rows (fixed seed) to the CSV file named."""
import random
import sys

random.seed(7)
cats = ["Books", "Garden", "Grocery", "Toys", "Beauty", "Electronics"]
with open(sys.argv[1], "w") as f:
    f.write("id,product,category,units,revenue,sold_on\n")
    for i in range(1, 1001):
        f.write(
            f"{i},Product {i:04d} {random.choice('ABCDEF')},{random.choice(cats)},{random.randint(1, 500)},"
            f"{random.randint(100, 9999999) / 100:.2f},2026-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}\n"
        )
