"""SecureChat: clinic staff and patients in one thread that mixes SMS and Secure Chat."""
