/* Read the greenhouse's temperature and humidity sensors over Linux's I2C device. */
#include <errno.h>
#include <fcntl.h>
#include <linux/i2c-dev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MEASURE_HIGH_REPEATABILITY 0x2400
#define MEASURE_DELAY_NS 15000000L

static uint8_t crc8(const uint8_t *data, size_t length)
{
    uint8_t crc = 0xFF;
    for (size_t i = 0; i < length; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 0x80) ? (uint8_t)((crc << 1) ^ 0x31) : (uint8_t)(crc << 1);
    }
    return crc;
}

static int measure(int bus, int address, double *celsius, double *humidity)
{
    uint8_t command[2] = {MEASURE_HIGH_REPEATABILITY >> 8, MEASURE_HIGH_REPEATABILITY & 0xFF};
    uint8_t reply[6];
    struct timespec delay = {0, MEASURE_DELAY_NS};

    if (ioctl(bus, I2C_SLAVE, address) < 0)
        return -errno;
    if (write(bus, command, sizeof command) != sizeof command)
        return -EIO;
    nanosleep(&delay, NULL);
    if (read(bus, reply, sizeof reply) != sizeof reply)
        return -EIO;
    if (crc8(reply, 2) != reply[2] || crc8(reply + 3, 2) != reply[5])
        return -EBADMSG;

    *celsius = -45.0 + 175.0 * ((reply[0] << 8) | reply[1]) / 65535.0;
    *humidity = 100.0 * ((reply[3] << 8) | reply[4]) / 65535.0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *device = argc > 1 ? argv[1] : "/dev/i2c-1";
    int address = argc > 2 ? (int)strtol(argv[2], NULL, 0) : 0x44;
    double celsius, humidity;

    int bus = open(device, O_RDWR);
    if (bus < 0) {
        fprintf(stderr, "%s: %s\n", device, strerror(errno));
        return 1;
    }
    int status = measure(bus, address, &celsius, &humidity);
    close(bus);
    if (status < 0) {
        fprintf(stderr, "sensor %#x on %s: %s\n", address, device, strerror(-status));
        return 1;
    }
    printf("%.2f %.2f\n", celsius, humidity);
    return 0;
}
